#!/usr/bin/env python3
"""Signs a body as a Standard Webhooks 1.0 sender does, with the official
library (pip package `standardwebhooks`): the outside implementation the
payment webhook tests check stampede against.

usage: sign-standard.py SECRET MSG_ID UNIX_SECONDS < body
prints the `webhook-signature` header's value.
"""
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

if len(sys.argv) != 4:
    sys.exit(__doc__)
secret, msg_id, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = sys.stdin.buffer.read()
at = datetime.fromtimestamp(seconds, tz=timezone.utc)
print(Webhook(secret).sign(msg_id, at, body.decode("utf-8")))
