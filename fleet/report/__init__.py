"""Static HTML report and the views the dashboard shares, derived from the results store."""
