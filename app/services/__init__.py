"""Flask-free domain functions shared by the API, the UI, the jobs and the CLI."""
