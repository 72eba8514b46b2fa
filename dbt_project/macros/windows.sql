{#- Windows are UTC hours and days on request_ts, whatever the session's TimeZone. -#}
{% macro window_start(timestamp, window_size) -%}
    date_trunc({{ window_size }}, {{ timestamp }}, 'UTC')
{%- endmacro %}

{% macro window_end(window_start, window_size) -%}
    ({{ window_start }} + cast('1 ' || {{ window_size }} as interval))
{%- endmacro %}

{#- The slices a prediction counts in: its own segment ('(none)' when it has none) and '(all)'. -#}
{% macro segment_slices(segment) -%}
    (values (coalesce({{ segment }}, '(none)')), ('(all)'))
{%- endmacro %}
