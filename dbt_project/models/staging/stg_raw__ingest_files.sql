with

source as (
    select * from {{ source('raw', 'ingest_files') }}
),

renamed as (
    select
        ---------- ids
        file_id,
        model_name,
        kind,
        path,

        ---------- the file
        size_bytes,
        checksum,
        status,
        rows_loaded,
        rows_rejected,
        error as error_message,
        duplicate_of as duplicate_of_file_id,

        ---------- timestamps
        min_event_ts,
        max_event_ts,
        loaded_at,

        ---------- lineage
        run_id

    from source
)

select * from renamed
