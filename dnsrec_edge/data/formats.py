"""The interaction-file formats the readers know, by name and by file suffix (no pandas here)."""

FORMATS = ("grouplens", "csv", "tsv", "parquet", "inter")
SUFFIX_FORMATS = {
    ".dat": "grouplens",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".inter": "inter",
}
