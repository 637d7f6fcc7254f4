"""Load tests: profiles, prompts, the locust users, per-request metrics, summaries and reports."""
