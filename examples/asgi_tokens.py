"""A small ASGI app on replpool.AsyncCluster: read-your-writes across requests through a
token header. Run it with uvicorn:

    export REPLPOOL_PRIMARY=postgresql://app:secret@db1/app
    export REPLPOOL_REPLICAS=postgresql://app:secret@db2/app,postgresql://app:secret@db3/app
    uvicorn --app-dir examples asgi_tokens:app

``POST /notes`` (the body is the note) answers with an ``X-Replpool-Token`` header; a
``GET /notes`` that sends it back sees the note, on a replica that has it or on the
primary, even while the replicas lag. (Sign the token where it crosses a trust
boundary: replpool does not.)
"""

import json
import os

import replpool

HEADER = b"x-replpool-token"
cluster = replpool.AsyncCluster(
    os.environ["REPLPOOL_PRIMARY"],
    [url for url in os.environ.get("REPLPOOL_REPLICAS", "").split(",") if url],
)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # open the cluster with the server, close it after
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await cluster.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await cluster.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    token = dict(scope["headers"]).get(HEADER, b"").decode() or None
    try:
        with replpool.session(after=token):  # one session per request
            if scope["method"] == "POST":
                note = await body(receive)
                await cluster.query("INSERT INTO notes (body) VALUES (%s)", (note.decode(),))
                status, answer = 201, {"written": True}
            else:
                rows = await cluster.query("SELECT body FROM notes ORDER BY id", read_only=True)
                status, answer = 200, {"notes": [body for (body,) in rows]}
            token = replpool.current_token()  # what this request wrote and read
    except replpool.TokenError as exc:
        status, answer, token = 400, {"error": str(exc)}, None
    headers = [(b"content-type", b"application/json")]
    if token:
        headers.append((HEADER, token.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


async def body(receive):
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
