with

source as (
    select * from {{ source('ops', 'model_specs') }}
),

renamed as (
    select
        ---------- ids
        model_name,

        ---------- task
        task,
        task = 'binary_classification' as is_binary,
        classes,
        positive_class,
        segment_name,

        ---------- windows and label maturity
        window_sizes,
        expected_label_delay,
        min_label_coverage,

        ---------- timestamps
        synced_at

    from source
)

select * from renamed
