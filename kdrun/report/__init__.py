"""Reports: the papers' tables from the results database.

`load` reads jobs/results/epochs into DataFrames; `filters` picks the jobs; one module per
table builds a `table.Report` (`accuracy` for top1/top5, `delta`, `diminishing`,
`agreement`, `curves`) from `cells` and `stats`; `formats`/`latex` render it and `plot`
draws it; `tables.build` ties these together for the CLI; `export` dumps the raw tables.
"""
