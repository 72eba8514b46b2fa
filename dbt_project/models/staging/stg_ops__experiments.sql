with

source as (
    select * from {{ source('ops', 'experiments') }}
),

renamed as (
    select
        ---------- ids
        experiment_id,
        model_name,
        retrain_run_id,

        ---------- the arms: control serves the champion, challenger the challenger
        champion_version,
        challenger_version,

        ---------- how it runs
        strategy,
        status,
        policy,

        ---------- after a promotion: the watch of the new champion (null when nothing was promoted)
        watch_status,

        ---------- timestamps
        started_at,
        ended_at,
        watch_ends_at

    from source
)

select * from renamed
