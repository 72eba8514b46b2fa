-- Incremental dbt builds look for rows loaded since their last build. Rows arrive in loaded_at
-- order, so a BRIN index finds them for almost no write cost (COPY speed matters here).
create index predictions_loaded_at_brin on raw.predictions using brin (loaded_at);
create index feedback_loaded_at_brin on raw.feedback using brin (loaded_at);
