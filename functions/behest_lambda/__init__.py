"""behest-lambda: Behest token mint and chat relay for AWS Lambda."""
