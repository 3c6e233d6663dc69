// An echo hook for component-http that accepts only calls signed with its secret.
//
//     npm ci && WEBHOOK_SECRET=whsec_... PORT=8080 node server.js
//
// The bridge's `[webhook] url` is then http://127.0.0.1:8080/xmpp, and its `signing_secret` the
// same whsec_ secret.
"use strict";

const express = require("express");
const { Webhook, WebhookVerificationError } = require("standardwebhooks");

// Read once at start, so that a missing or malformed secret stops the hook at once rather than
// failing every call.
const verifier = new Webhook(process.env.WEBHOOK_SECRET);
const port = Number(process.env.PORT ?? 8080);

const app = express();

// express.raw, not express.json: the signature covers the exact bytes sent, which parsed and
// re-serialised JSON would not reproduce. The limit leaves room for the bridge's default
// max_stanza_bytes (256 KiB) twice over, as `stanza` and as `body`, plus JSON escaping.
app.post("/xmpp", express.raw({ type: "*/*", limit: "8mb" }), (req, res) => {
  let stanza;
  try {
    // Checks the signature and refuses a timestamp more than five minutes from our clock
    // (replays); returns the parsed JSON.
    stanza = verifier.verify(req.body ?? Buffer.alloc(0), req.headers);
  } catch (err) {
    if (!(err instanceof WebhookVerificationError)) throw err;
    return res.status(401).type("text/plain").send("invalid signature");
  }

  if (stanza?.kind === "message" && typeof stanza.body === "string") {
    return res.json({ body: `You said: ${stanza.body}` });
  }
  if (stanza?.kind === "iq" && (stanza.type === "get" || stanza.type === "set")) {
    // An iq get/set must be answered, and a 2xx would answer it with an empty result as if we
    // understood it: 501 becomes feature-not-implemented.
    return res.sendStatus(501);
  }
  // A message without a body (a chat state, say) or a presence: a 204 sends no reply.
  res.sendStatus(204);
});

const server = app.listen(port, "127.0.0.1", (err) => {
  if (err) throw err;
  // The port from the socket, so that PORT=0 (a free port) prints the one actually bound.
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
