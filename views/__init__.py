"""Pictures of the outputs: the dashboard's and report's SQL (queries), the AI/BI dashboard, the HTML report."""
