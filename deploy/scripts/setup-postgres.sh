#!/bin/sh
# Create (or upgrade) the Temporal and visibility schemas. Safe to run again: `create`
# of an existing database fails harmlessly and update-schema only applies what is new.
set -eu
tool() { temporal-sql-tool --plugin postgres12 --ep postgresql -u "$POSTGRES_USER" -p 5432 "$@"; }
schema=/etc/temporal/schema/postgresql/v12
for db in temporal temporal_visibility; do
  tool --db "$db" create || true
done
tool --db temporal setup-schema -v 0.0 || true
tool --db temporal update-schema -d "$schema/temporal/versioned"
tool --db temporal_visibility setup-schema -v 0.0 || true
tool --db temporal_visibility update-schema -d "$schema/visibility/versioned"
echo "Temporal schemas are ready."
