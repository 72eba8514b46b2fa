with

predictions as (
    select * from {{ ref('stg_raw__predictions') }}
),

feedback as (
    select * from {{ ref('stg_raw__feedback') }}
),

model_specs as (
    select * from {{ ref('stg_ops__model_specs') }}
),

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
        labels.n_labels,
        labels.first_label_ts,
        labels.label_ts,
        labels.feedback_loaded_at

    from predictions

    inner join model_specs
        on predictions.model_name = model_specs.model_name

    -- A lateral lookup (primary key index) rather than a join to all feedback grouped: a build
    -- that recomputes a few windows reads only their predictions' feedback.
    left join lateral (
        select
            -- the latest label wins: a later feedback_ts is a correction
            (array_agg(feedback.label order by feedback.feedback_ts desc))[1] as label,
            (array_agg(feedback.outcome order by feedback.feedback_ts desc))[1] as outcome,
            count(*) as n_labels,
            min(feedback.feedback_ts) as first_label_ts,
            max(feedback.feedback_ts) as label_ts,
            max(feedback.loaded_at) as feedback_loaded_at
        from feedback
        where
            feedback.model_name = predictions.model_name
            and feedback.prediction_id = predictions.prediction_id
    ) as labels on true
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

final as (
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
)

select * from final
