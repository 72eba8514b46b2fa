{#- Every listed column is non-null, checked in one scan of the model. One test per model (and per
    test config) instead of one `not_null` per column: each dbt node costs a query and dbt's own
    bookkeeping, and 134 column tests made most of a production build's data-test time. Fails with
    one row per column that has NULLs: its name and how many rows. -#}
{% test not_null_columns(model, columns) %}

with

counts as (
    select
        {%- for column in columns %}
        count(*) filter (where {{ adapter.quote(column) }} is null) as {{ adapter.quote('nulls_' ~ loop.index) }}
        {{- "," if not loop.last }}
        {%- endfor %}
    from {{ model }}
)

select listed.column_name, listed.null_rows
from counts
cross join lateral (
    values
    {%- for column in columns %}
        ('{{ column }}', {{ adapter.quote('nulls_' ~ loop.index) }}){{ "," if not loop.last }}
    {%- endfor %}
) as listed (column_name, null_rows)
where listed.null_rows > 0

{% endtest %}
