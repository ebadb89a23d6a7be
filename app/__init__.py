"""The Streamlit investigation app (`diagnose app [RUNS_DIR]`, docs/app.md): run folders in, the same Report the CLI
renders, shown as pages to explore."""
