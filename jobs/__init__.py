"""RQ jobs and the processes that run them; jobs only call domain services."""
