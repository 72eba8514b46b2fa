-- Every file under a model's predictions/ and feedback/ folders gets a manifest row (issue 12):
--   skipped  an unsupported suffix or a file outside a dt=YYYY-MM-DD folder (not read; checksum null)
--   changed  a file whose bytes changed after it was loaded (appended lines are loaded, a rewrite is not)
-- and a failed file (checksum null when it could not even be read) is retried only when it changes.
alter table raw.ingest_files drop constraint ingest_files_status_check;
alter table raw.ingest_files
    add constraint ingest_files_status_check
        check (status in ('loaded', 'empty', 'duplicate', 'failed', 'skipped', 'changed')),
    alter column checksum drop not null,
    -- the listing (size, modification time) when ingest last looked at the file: a file is read again
    -- only when its listing differs (size_bytes / checksum stay those of the bytes ingest accounted for)
    add column seen_size_bytes bigint,
    add column seen_mtime      double precision;

comment on column raw.ingest_files.checksum is
    'sha256 of the bytes ingest accounted for; null when the file was not read (skipped, vanished)';
