with

source as (
    select * from {{ source('ops', 'retrain_runs') }}
),

renamed as (
    select
        ---------- ids
        retrain_run_id,
        model_name,
        run_key,
        mlflow_run_id,
        model_version,

        ---------- why
        trigger,
        reason,
        evidence,

        ---------- state
        status,
        attempts,
        error as error_message,

        ---------- timestamps
        started_at,
        finished_at,

        ---------- the data
        data_source,
        data_start,
        data_end,
        -- labels loaded after this are new to the training (a bootstrap used none: its start)
        coalesce(labels_loaded_until, started_at) as labels_seen_until,
        data_hash,
        n_train,
        n_validation,
        n_holdout,
        holdout_start,
        holdout_end,

        ---------- the result
        candidate,
        alias,
        metrics,
        metrics -> 'holdout' as holdout_metrics,
        feature_importance -> 'gain' as gain_importance

    from source
)

select * from renamed
