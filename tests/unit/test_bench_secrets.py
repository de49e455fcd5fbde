"""`make bench` runs every benchmark in one process: each may hold the bench's key secret in moto in turn."""

from __future__ import annotations

import boto3

from benchmarks.key_secret import REGION, MotoSecretsManager


def test_two_benchmarks_in_one_process_each_hold_the_key_secret_in_moto_in_turn() -> None:
    for value in ("first", "second"):
        with MotoSecretsManager(value) as moto:
            client = boto3.client("secretsmanager", endpoint_url=moto.url, region_name=REGION,
                                  aws_access_key_id="bench", aws_secret_access_key="bench")
            assert client.get_secret_value(SecretId=moto.secret_arn)["SecretString"] == value
