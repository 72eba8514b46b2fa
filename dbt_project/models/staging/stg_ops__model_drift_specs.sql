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
        -- fewer non-null values in a window: no verdict
        coalesce(cast(spec -> 'drift' ->> 'min_samples' as bigint), 1) as min_samples,
        -- the verdict's statistic per column type, and where its threshold comes from
        coalesce(spec -> 'drift' -> 'statistic' ->> 'numeric', 'js') as numeric_statistic,
        coalesce(spec -> 'drift' -> 'statistic' ->> 'categorical', 'js') as categorical_statistic,
        coalesce(spec -> 'drift' ->> 'thresholds_from', 'spec') as thresholds_from,
        coalesce(cast(spec -> 'drift' ->> 'k' as double precision), 3) as threshold_k,
        coalesce(cast(spec -> 'drift' ->> 'p_value' as double precision), 0.01) as p_value_threshold,
        -- changes with any setting of the drift block: the marts recompute what it changed
        md5(coalesce(spec -> 'drift', '{}'::jsonb)::text) as drift_spec_hash,

        ---------- timestamps
        synced_at

    from source
)

select * from renamed
