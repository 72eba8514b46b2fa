-- The model specs as the warehouse sees them (synced from include/specs by driftloop), so dbt and
-- analysts can read classes, the positive class, windows and label-maturity rules with SQL.
create table ops.model_specs (
    model_name            text primary key,
    task                  text not null check (task in ('binary_classification', 'multiclass_classification')),
    classes               jsonb not null,            -- ["stay", "churn"], in spec order
    positive_class        text,                      -- binary models only
    segment_name          text,
    features              jsonb not null,            -- [{"name", "type", "required", "min", "max", "categories"}]
    window_sizes          jsonb not null,            -- ["hour", "day"]
    expected_label_delay  interval not null,         -- older windows are mature whatever their coverage
    min_label_coverage    double precision not null, -- share labelled at which a window is mature
    spec                  jsonb not null,            -- the whole validated spec
    synced_at             timestamptz not null default now()
);
