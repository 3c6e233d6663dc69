// Command go-nethttp is an echo hook for component-http that accepts only calls signed with its
// secret, using nothing but the standard library.
//
//	WEBHOOK_SECRET=whsec_... PORT=8080 go run .
//
// The bridge's `[webhook] url` is then http://127.0.0.1:8080/xmpp, and its `signing_secret` the
// same whsec_ secret.
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// tolerance is how far a call's timestamp may be from our clock, as in the Standard Webhooks
// libraries: a captured call cannot be replayed later.
const tolerance = 5 * time.Minute

// maxBody leaves room for the bridge's default max_stanza_bytes (256 KiB) twice over, as
// `stanza` and as `body`, plus JSON escaping.
const maxBody = 8 << 20

// request holds the fields of the bridge's JSON that the echo needs.
type request struct {
	Kind string  `json:"kind"`
	Type string  `json:"type"`
	Body *string `json:"body"` // a pointer: an absent body is not an empty one
}

// decodeSecret turns "whsec_<base64>" into the HMAC key. The '=' padding is optional, as the
// bridge and the Standard Webhooks libraries allow.
func decodeSecret(secret string) ([]byte, error) {
	key, err := base64.RawStdEncoding.DecodeString(
		strings.TrimRight(strings.TrimPrefix(secret, "whsec_"), "="))
	if err == nil && len(key) == 0 {
		err = errors.New("empty key")
	}
	return key, err
}

// verify checks the Standard Webhooks headers against the exact body bytes: the signed content
// is "{webhook-id}.{webhook-timestamp}.{body}", and any one of the space-separated "v1,"
// signatures may match (the bridge sends one per secret while a secret is being rotated).
func verify(key []byte, header http.Header, body []byte, now time.Time) error {
	id := header.Get("webhook-id")
	timestamp := header.Get("webhook-timestamp")
	signatures := header.Get("webhook-signature")
	if id == "" || timestamp == "" || signatures == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	seconds, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("webhook-timestamp is not a number")
	}
	// time.Time.Sub saturates instead of overflowing, so even an absurd timestamp is compared
	// correctly.
	if age := now.Sub(time.Unix(seconds, 0)); age > tolerance || age < -tolerance {
		return errors.New("webhook-timestamp is more than 5 minutes away")
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, timestamp)
	mac.Write(body)
	expected := mac.Sum(nil)
	for _, versioned := range strings.Split(signatures, " ") {
		version, signature, _ := strings.Cut(versioned, ",")
		if version != "v1" {
			continue // other versions are for other schemes
		}
		got, err := base64.StdEncoding.DecodeString(signature)
		// hmac.Equal takes the same time wherever the bytes differ, so an attacker cannot
		// learn the signature byte by byte.
		if err == nil && hmac.Equal(got, expected) {
			return nil
		}
	}
	return errors.New("no matching signature")
}

func hook(key []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		// The raw bytes, read before any JSON decoding: the signature covers exactly them.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := verify(key, r.Header, body, time.Now()); err != nil {
			log.Printf("refused a call: %v", err)
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		var stanza request
		if err := json.Unmarshal(body, &stanza); err != nil {
			http.Error(w, "body is not JSON", http.StatusBadRequest)
			return
		}
		switch {
		case stanza.Kind == "message" && stanza.Body != nil:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]string{"body": "You said: " + *stanza.Body})
		case stanza.Kind == "iq" && (stanza.Type == "get" || stanza.Type == "set"):
			// An iq get/set must be answered, and a 2xx would answer it with an empty result
			// as if we understood it: 501 becomes feature-not-implemented.
			w.WriteHeader(http.StatusNotImplemented)
		default:
			// A message without a body (a chat state, say) or a presence: no reply.
			w.WriteHeader(http.StatusNoContent)
		}
	}
}

func main() {
	// Read once at start, so that a missing or malformed secret stops the hook at once
	// rather than failing every call.
	key, err := decodeSecret(os.Getenv("WEBHOOK_SECRET"))
	if err != nil {
		log.Fatalf("WEBHOOK_SECRET must be a whsec_ secret: %v", err)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	// Listen before announcing it, so that a caller waiting for the line can connect at once;
	// the address comes from the socket, so PORT=0 (a free port) prints the one bound.
	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", listener.Addr())

	mux := http.NewServeMux()
	mux.Handle("/xmpp", hook(key))
	server := &http.Server{
		Handler: mux,
		// Bounds for a slow or stalled caller; the bridge's own default timeout is 15 s.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	log.Fatal(server.Serve(listener))
}
