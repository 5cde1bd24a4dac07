"""`python -m schemas` rewrites the JSON Schema files from the Python types."""

from schemas.generate import write_all

for path in write_all():
    print(f"wrote {path}")
