"""An echo hook for component-http that accepts only calls signed with its secret.

    WEBHOOK_SECRET=whsec_... PORT=8080 python3 app.py

The bridge's `[webhook] url` is then http://127.0.0.1:8080/xmpp, and its `signing_secret` the
same whsec_ secret.
"""

import os

from flask import Flask, jsonify, request
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug.serving import make_server

app = Flask(__name__)

# Read once at start, so that a missing or malformed secret stops the hook at once rather than
# failing every call.
verifier = Webhook(os.environ["WEBHOOK_SECRET"])


@app.post("/xmpp")
def hook():
    try:
        # The signature covers the exact bytes sent, so verify them before any JSON parsing.
        # The library also refuses a timestamp more than five minutes from our clock (replays).
        verifier.verify(request.get_data(), request.headers, json_parse=False)
    except (WebhookVerificationError, ValueError):
        # ValueError too: the library lets a malformed signature header escape as one.
        return "invalid signature", 401, {"Content-Type": "text/plain"}

    stanza = request.get_json()
    if stanza["kind"] == "message" and "body" in stanza:
        return jsonify(body=f"You said: {stanza['body']}")
    if stanza["kind"] == "iq" and stanza.get("type") in ("get", "set"):
        # An iq get/set must be answered, and a 2xx would answer it with an empty result as if
        # we understood it: 501 becomes feature-not-implemented.
        return "", 501
    # A message without a body (a chat state, say) or a presence: a 204 sends no reply.
    return "", 204


if __name__ == "__main__":
    # make_server rather than app.run: it has bound the port once it returns, so the line below
    # is only printed when a caller can connect, and PORT=0 gets a free port that the line names.
    server = make_server("127.0.0.1", int(os.environ.get("PORT", "8080")), app, threaded=True)
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
