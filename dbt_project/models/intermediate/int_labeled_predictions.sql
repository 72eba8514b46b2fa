-- A table, incremental on the prediction: a build (re)computes only the predictions loaded since
-- the last one and those whose feedback was, so the marts read precomputed per-prediction terms
-- instead of re-joining feedback and re-parsing scores for every window they recompute.
-- Unlogged (no WAL for 10M wide rows and their six indexes): it is derived from raw alone, and
-- after a crash Postgres empties it; the next build then finds no watermarks and recomputes it
-- all, and the marts, whose rows all look changed, every window.
{{
    config(
        materialized='incremental',
        unlogged=true,
        pre_hook=["{{ build_memory() }}"],
        unique_key=['model_name', 'prediction_id'],
        incremental_strategy='delete+insert',
        on_schema_change='fail',
        indexes=[
            {'columns': ['model_name', 'prediction_id'], 'unique': true},
            {'columns': ['request_ts']},
            {'columns': ['model_name', 'prediction_loaded_at']},
            {'columns': ['model_name', 'feedback_loaded_at']},
            {'columns': ['changed_at']},
            {'columns': ['prediction_changed_at']},
        ],
    )
}}

{%- set built_at = "cast('" ~ run_started_at.isoformat() ~ "' as timestamp with time zone)" %}
{%- set prediction_columns = [
    'model_version', 'variant', 'experiment_id', 'segment', 'request_ts', 'latency_ms', 'is_failed',
    'error_message', 'predicted_class', 'scores', 'prediction_loaded_at',
] %}
{%- set content_columns = [
    'model_name', 'prediction_id', 'model_version', 'variant', 'experiment_id', 'segment',
    'request_ts', 'first_label_ts', 'label_ts',
    'latency_ms', 'is_failed', 'error_message',
    'predicted_class', 'scores', 'positive_score', 'top_class', 'top_score',
    'label', 'outcome', 'is_labelled', 'n_labels', 'label_delay_seconds',
    'is_correct', 'is_top_correct', 'is_predicted_positive', 'is_actual_positive', 'log_loss', 'brier',
    'task', 'is_binary', 'classes', 'positive_class', 'window_sizes',
    'prediction_loaded_at', 'feedback_loaded_at', 'loaded_at',
] %}

with

model_specs as (
    select * from {{ ref('stg_ops__model_specs') }}
),

-- read twice by incremental builds: not materialized, so that the lateral label lookup below keeps
-- using feedback's primary key
feedback as not materialized (
    select * from {{ ref('stg_raw__feedback') }}
),

-- (read by incremental builds only)
prediction_keys as (
    select * from {{ ref('stg_raw__prediction_keys') }}
),

{% if is_incremental() %}

-- per model: rows loaded after these were not in the last build (a late-committing load is
-- caught by var('loaded_at_lookback')); NULL for a model the table has never seen: all of it is new
-- (one index lookup per model: max() of an indexed column)
watermarks as (
    select
        model_name,
        (select max(stored.prediction_loaded_at) from {{ this }} as stored where stored.model_name = model_specs.model_name)
            as predictions_loaded_at,
        (select max(stored.feedback_loaded_at) from {{ this }} as stored where stored.model_name = model_specs.model_name)
            as feedback_loaded_at
    from model_specs
),

loaded_since as (
    select
        model_name,
        predictions_loaded_at - cast('{{ var("loaded_at_lookback") }}' as interval) as predictions_since,
        -- a model without any feedback yet: all of its feedback is new
        case
            when predictions_loaded_at is not null
                then coalesce(feedback_loaded_at - cast('{{ var("loaded_at_lookback") }}' as interval), '-infinity')
        end as feedback_since
    from watermarks
),

-- predictions already in the table whose feedback was loaded since: found through prediction_keys
-- (their request_ts), then by the predictions' (model_name, request_ts) index
relabelled_keys as (
    select distinct
        prediction_keys.model_name,
        prediction_keys.prediction_id,
        prediction_keys.request_ts
    from feedback
    inner join loaded_since
        on feedback.model_name = loaded_since.model_name
    -- lateral: a primary key probe per new feedback row, not a join with every key
    cross join lateral (
        select *
        from prediction_keys
        where
            prediction_keys.model_name = feedback.model_name
            and prediction_keys.prediction_id = feedback.prediction_id
        offset 0
    ) as prediction_keys
    where
        feedback.loaded_at > loaded_since.feedback_since
        -- the same bound for all models, as a constant Postgres can push into the scan (BRIN index)
        and feedback.loaded_at > (select coalesce(min(feedback_since), 'infinity') from loaded_since)
),

-- raw predictions are read twice below, by two refs rather than one CTE (Postgres would materialize
-- a CTE read twice, i.e. scan every partition): each read keeps its own index / partition bounds
new_predictions as (
    select stg_raw__predictions.*
    from {{ ref('stg_raw__predictions') }} as stg_raw__predictions
    inner join loaded_since
        on stg_raw__predictions.model_name = loaded_since.model_name
    where
        (loaded_since.predictions_since is null or stg_raw__predictions.loaded_at > loaded_since.predictions_since)
        and stg_raw__predictions.loaded_at > (
            select coalesce(min(coalesce(predictions_since, '-infinity')), 'infinity') from loaded_since
        )
),

relabelled_predictions as (
    select stg_raw__predictions.*
    from relabelled_keys
    inner join loaded_since
        on relabelled_keys.model_name = loaded_since.model_name
    -- lateral: one (model_name, request_ts) index probe per key, in its day's partition only
    cross join lateral (
        select *
        from {{ ref('stg_raw__predictions') }} as stg_raw__predictions
        where
            stg_raw__predictions.model_name = relabelled_keys.model_name
            and stg_raw__predictions.request_ts = relabelled_keys.request_ts
            and stg_raw__predictions.prediction_id = relabelled_keys.prediction_id
        -- a fence: otherwise Postgres flattens the lateral into a hash join over every partition
        offset 0
    ) as stg_raw__predictions
    -- those loaded since are new_predictions already
    where stg_raw__predictions.loaded_at <= loaded_since.predictions_since
),

predictions as (
    select * from new_predictions
    union all
    select * from relabelled_predictions
),
{% else %}
predictions as (
    select * from {{ ref('stg_raw__predictions') }}
),
{% endif %}

labelled as (
    select
        predictions.*,
        model_specs.task,
        model_specs.is_binary,
        model_specs.classes,
        model_specs.positive_class,
        model_specs.window_sizes,
        labels.label,
        labels.outcome,
        -- 0 without feedback (the grouped join of a full build gives NULL there)
        coalesce(labels.n_labels, 0) as n_labels,
        labels.first_label_ts,
        labels.label_ts,
        labels.feedback_loaded_at

    from predictions

    inner join model_specs
        on predictions.model_name = model_specs.model_name

    {%- if is_incremental() %}
    -- A lateral lookup (primary key index) rather than a join to all feedback grouped: a build
    -- that recomputes a few windows reads only their predictions' feedback.
    left join lateral (
        select {{ latest_labels('feedback') }}
        from feedback
        where
            feedback.model_name = predictions.model_name
            and feedback.prediction_id = predictions.prediction_id
    ) as labels on true
    {%- else %}
    -- A full build reads every prediction: all feedback grouped once and joined (a hash join), not
    -- an index probe per prediction (15 of the 22 s a million predictions took).
    left join (
        select
            feedback.model_name,
            feedback.prediction_id,
            {{ latest_labels('feedback') }}
        from feedback
        group by feedback.model_name, feedback.prediction_id
    ) as labels
        on
            labels.model_name = predictions.model_name
            and labels.prediction_id = predictions.prediction_id
    {%- endif %}
),

class_probabilities as (
    select
        labelled.*,
        class_scores.top_class,
        class_scores.top_score,
        class_scores.squared_error_sum

    from labelled

    left join lateral (
        select
            -- argmax over the classes; equal probabilities go to the class listed first in the spec
            (array_agg(classes.class_name order by classes.probability desc, classes.class_position)
                filter (where classes.probability is not null))[1] as top_class,
            max(classes.probability) as top_score,
            sum(power(cast(classes.class_name = labelled.label as integer) - classes.probability, 2))
                as squared_error_sum
        from (
            select
                class_name,
                class_position,
                cast(labelled.scores ->> class_name as double precision) as probability
            from jsonb_array_elements_text(labelled.classes) with ordinality as listed (class_name, class_position)
        ) as classes
    ) as class_scores on true
),

computed as (
    select
        ---------- ids
        model_name,
        prediction_id,
        model_version,
        variant,
        experiment_id,
        segment,

        ---------- timestamps
        request_ts,
        first_label_ts,
        label_ts,

        ---------- the request
        latency_ms,
        is_failed,
        error_message,

        ---------- the prediction
        predicted_class,
        scores,
        case when is_binary then coalesce(score, cast(scores ->> positive_class as double precision)) end
            as positive_score,
        top_class,
        top_score,

        ---------- the truth (latest label)
        label,
        outcome,
        label is not null as is_labelled,
        n_labels,
        cast(extract(epoch from first_label_ts - request_ts) as double precision) as label_delay_seconds,

        ---------- per-prediction quality terms; NULL unless the prediction is scored and labelled
        case when not is_failed and label is not null then predicted_class = label end as is_correct,
        case when not is_failed and label is not null then top_class = label end as is_top_correct,
        case when is_binary and not is_failed then predicted_class = positive_class end
            as is_predicted_positive,
        case when is_binary and not is_failed and label is not null then label = positive_class end
            as is_actual_positive,
        case
            when is_failed or label is null then null
            when is_binary then {{ log_loss_term(
                "case when label = positive_class then coalesce(score, cast(scores ->> positive_class as double precision))"
                ~ " else 1 - coalesce(score, cast(scores ->> positive_class as double precision)) end"
            ) }}
            else {{ log_loss_term("coalesce(cast(scores ->> label as double precision), 0)") }}
        end as log_loss,
        case
            when is_failed or label is null then null
            -- binary: on the positive class (brier_score_loss); multiclass: summed over the classes
            when is_binary then power(
                cast(label = positive_class as integer)
                - coalesce(score, cast(scores ->> positive_class as double precision)),
                2
            )
            else squared_error_sum
        end as brier,

        ---------- the spec
        task,
        is_binary,
        classes,
        positive_class,
        window_sizes,

        ---------- lineage
        loaded_at as prediction_loaded_at,
        feedback_loaded_at,
        greatest(loaded_at, feedback_loaded_at) as loaded_at

    from class_probabilities
),

{% if is_incremental() %}
-- Of the predictions recomputed, only those that differ from their stored row (or are new) are
-- written, stamped with this build: the marts recompute the windows of rows changed since their own
-- last build, so the lookback's rows, recomputed unchanged, touch no window.
compared as (
    select
        computed.*,
        stored.prediction_id is null as is_new,
        case
            when stored.prediction_id is null then true
            else (
                {%- for column in content_columns %}
                computed.{{ column }}{% if not loop.last %},{% endif %}
                {%- endfor %}
            ) is distinct from (
                {%- for column in content_columns %}
                stored.{{ column }}{% if not loop.last %},{% endif %}
                {%- endfor %}
            )
        end as is_changed,
        case
            when stored.prediction_id is null then true
            else (
                {%- for column in prediction_columns %}
                computed.{{ column }}{% if not loop.last %},{% endif %}
                {%- endfor %}
            ) is distinct from (
                {%- for column in prediction_columns %}
                stored.{{ column }}{% if not loop.last %},{% endif %}
                {%- endfor %}
            )
        end as is_prediction_changed,
        stored.prediction_changed_at as stored_prediction_changed_at
    from computed
    -- lateral: a primary key probe per recomputed prediction, never a scan of the whole table
    left join lateral (
        select *
        from {{ this }} as stored
        where
            stored.model_name = computed.model_name
            and stored.prediction_id = computed.prediction_id
        offset 0
    ) as stored on true
),
{% endif %}

final as (
    select
        {% for column in content_columns %}{{ column }},
        {% endfor %}
        ---------- this build's stamp: when the row last changed, and when its prediction did
        {%- if is_incremental() %}
        {{ built_at }} as changed_at,
        case when is_prediction_changed then {{ built_at }} else stored_prediction_changed_at end
            as prediction_changed_at
    from compared
    where is_changed
        {%- else %}
        {{ built_at }} as changed_at,
        {{ built_at }} as prediction_changed_at
    from computed
        {%- endif %}
)

select * from final
