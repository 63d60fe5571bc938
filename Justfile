# Thin aliases; the README's two commands work without `just`.

# The main job against local emulators.
local:
    cargo xtask local

# Every test, with the servers it needs.
test *ARGS:
    cargo xtask test {{ARGS}}

# What CI runs.
ci:
    bash .ci/run

# Start the test servers and print their variables (Ctrl-C stops them).
env:
    cargo xtask env

# Rewrite golden files (schema, diagnostics) after an intended change; review the diff.
bless:
    STACKSMITH_BLESS=1 cargo xtask test
