"""The Streamlit dashboard (`obsdeco dashboard`); needs the `dashboard` extra."""
