"""The only code that speaks HTTP to the Capella Management API: client, retries, rate limit."""
