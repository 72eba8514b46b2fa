-- The drift block of each model's spec, cast. (A second view on ops.model_specs, one row per source
-- row like stg_ops__model_specs, which does not expose the spec's jsonb.)
with

source as (
    select * from {{ source('ops', 'model_specs') }}
),

renamed as (
    select
        ---------- ids
        model_name,

        ---------- drift thresholds (the spec always holds them: its parser fills in the defaults)
        cast(spec -> 'drift' -> 'thresholds' ->> 'psi' as double precision) as psi_threshold,
        cast(spec -> 'drift' -> 'thresholds' ->> 'js' as double precision) as js_threshold,
        cast(spec -> 'drift' -> 'prediction' ->> 'psi' as double precision) as prediction_psi_threshold,
        cast(spec -> 'drift' -> 'prediction' ->> 'js' as double precision) as prediction_js_threshold,
        -- {"<feature>": {"psi": ..., "js": ...}}: per-feature overrides
        coalesce(spec -> 'drift' -> 'features', '{}'::jsonb) as feature_thresholds,

        ---------- timestamps
        synced_at

    from source
)

select * from renamed
