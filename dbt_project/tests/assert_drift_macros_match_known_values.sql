-- depends_on: {{ ref('fct_feature_drift') }}
-- (attached to the mart that uses these macros, so per-model `dbt build --select` runs it too)
-- psi and js_distance against numpy / scipy on the same bins:
--   psi = numpy.sum((a - e) * numpy.log(a / e)) with a, e = numpy.maximum(fractions, 1e-4)
--   js_distance = scipy.spatial.distance.jensenshannon(actual, expected, base=2)
-- Fails with one row per case whose result differs by more than 1e-12.

with

bins (case_name, bin_index, expected, actual) as (
    values
        -- a quarter of the mass moves from the first bin to the second
        ('quarter shift', 0, 0.25::double precision, 0.125::double precision),
        ('quarter shift', 1, 0.25, 0.375),
        ('quarter shift', 2, 0.25, 0.25),
        ('quarter shift', 3, 0.25, 0.25),
        -- a category the reference never saw: the 1e-4 floor keeps PSI finite
        ('empty reference bin', 0, 0.5, 0.5),
        ('empty reference bin', 1, 0.5, 0.25),
        ('empty reference bin', 2, 0.0, 0.25),
        -- PSI is symmetric in a and e once floored; JS distance always is
        ('empty window bin', 0, 0.5, 0.5),
        ('empty window bin', 1, 0.25, 0.5),
        ('empty window bin', 2, 0.25, 0.0),
        ('identical', 0, 0.2, 0.2),
        ('identical', 1, 0.3, 0.3),
        ('identical', 2, 0.5, 0.5),
        -- no overlap at all: JS distance is 1 (its maximum, base 2)
        ('disjoint', 0, 1.0, 0.0),
        ('disjoint', 1, 0.0, 1.0),
        -- ten deciles, the outer ones moved
        ('ten bins', 0, 0.1, 0.05),
        ('ten bins', 1, 0.1, 0.05),
        ('ten bins', 2, 0.1, 0.1),
        ('ten bins', 3, 0.1, 0.1),
        ('ten bins', 4, 0.1, 0.1),
        ('ten bins', 5, 0.1, 0.1),
        ('ten bins', 6, 0.1, 0.1),
        ('ten bins', 7, 0.1, 0.1),
        ('ten bins', 8, 0.1, 0.15),
        ('ten bins', 9, 0.1, 0.15)
),

actual as (
    select
        case_name,
        {{ psi('expected', 'actual') }} as psi,
        {{ js_distance('expected', 'actual') }} as js_distance
    from bins
    group by case_name
),

expected (case_name, psi, js_distance) as (
    values
        ('quarter shift', 0.1373265360835137::double precision, 0.1561968960885563::double precision),
        ('empty reference bin', 2.1285158932529735, 0.3945111687006674),
        ('empty window bin', 2.1285158932529735, 0.3945111687006674),
        ('identical', 0.0, 0.0),
        ('disjoint', 18.418838675877968, 1.0),
        ('ten bins', 0.10986122886681095, 0.13970675101139313)
),

no_bins as (
    select
        {{ psi('expected', 'actual') }} as psi,
        {{ js_distance('expected', 'actual') }} as js_distance
    from bins
    where false
),

-- what a left join that found no bins gives: NULL fractions, which must not count as 0 (or epsilon)
null_bins as (
    select
        {{ psi('expected', 'actual') }} as psi,
        {{ js_distance('expected', 'actual') }} as js_distance
    from (values (cast(null as double precision), cast(null as double precision))) as unmatched (expected, actual)
),

failures as (
    select
        expected.case_name,
        actual.psi,
        expected.psi as expected_psi,
        actual.js_distance,
        expected.js_distance as expected_js_distance
    from expected
    left join actual
        on expected.case_name = actual.case_name
    where not (
        abs(actual.psi - expected.psi) <= 1e-12
        and abs(actual.js_distance - expected.js_distance) <= 1e-12
    )
    or actual.case_name is null
    union all
    select 'no bins is NULL', psi, null, js_distance, null
    from no_bins
    where psi is not null or js_distance is not null
    union all
    select 'NULL fractions are NULL', psi, null, js_distance, null
    from null_bins
    where psi is not null or js_distance is not null
)

select * from failures
