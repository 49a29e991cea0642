"""`streamlit run dashboard/app.py`: obsdeco's dashboard (the app lives in obsdeco.dashboard)."""

from obsdeco.dashboard.app import main

main()
