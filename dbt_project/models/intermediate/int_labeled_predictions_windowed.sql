with

labeled_predictions as (
    select * from {{ ref('int_labeled_predictions') }}
),

windowed as (
    select
        ---------- the window key
        labeled_predictions.model_name,
        labeled_predictions.model_version,
        labeled_predictions.variant,
        slices.segment,
        window_sizes.window_size,
        {{ window_start('labeled_predictions.request_ts', 'window_sizes.window_size') }} as window_start,

        ---------- the prediction
        labeled_predictions.prediction_id,
        labeled_predictions.request_ts,
        labeled_predictions.latency_ms,
        labeled_predictions.is_failed,
        labeled_predictions.predicted_class,
        labeled_predictions.scores,
        labeled_predictions.positive_score,
        labeled_predictions.top_class,
        labeled_predictions.top_score,
        labeled_predictions.label,
        labeled_predictions.is_labelled,
        labeled_predictions.n_labels,
        labeled_predictions.label_delay_seconds,
        labeled_predictions.is_correct,
        labeled_predictions.is_top_correct,
        labeled_predictions.is_predicted_positive,
        labeled_predictions.is_actual_positive,
        labeled_predictions.log_loss,
        labeled_predictions.brier,

        ---------- the spec
        labeled_predictions.is_binary,
        labeled_predictions.classes,
        labeled_predictions.positive_class,

        ---------- lineage
        labeled_predictions.prediction_loaded_at,
        labeled_predictions.loaded_at,
        labeled_predictions.changed_at

    from labeled_predictions
    -- every window size the spec asks for ...
    cross join lateral jsonb_array_elements_text(labeled_predictions.window_sizes) as window_sizes (window_size)
    -- ... and both its own segment and the '(all)' rollup
    cross join lateral {{ segment_slices('labeled_predictions.segment') }} as slices (segment)
),

final as (
    select
        model_name,
        model_version,
        variant,
        segment,
        window_size,
        window_start,
        {{ window_end('window_start', 'window_size') }} as window_end,
        prediction_id,
        request_ts,
        latency_ms,
        is_failed,
        predicted_class,
        scores,
        positive_score,
        top_class,
        top_score,
        label,
        is_labelled,
        n_labels,
        label_delay_seconds,
        is_correct,
        is_top_correct,
        is_predicted_positive,
        is_actual_positive,
        log_loss,
        brier,
        is_binary,
        classes,
        positive_class,
        prediction_loaded_at,
        loaded_at,
        changed_at

    from windowed
)

select * from final
