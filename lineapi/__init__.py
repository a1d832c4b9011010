"""LINE Login v2.1 and Messaging API: the client the portal uses and a faithful local sandbox.

Modules:

* `lineapi.endpoints`: LINE's paths, shared by client and sandbox.
* `lineapi.client`: `LineLogin` (authorize URL, code exchange with PKCE, local HS256 ID-token
  verification, profile, friendship, refresh, revoke), `callback_error`, `new_pkce`,
  `new_token`, the result dataclasses and `LineError` (with `kind` in denied / invalid /
  timeout / server / token).
* `lineapi.messaging`: `push_text`, a push through line-bot-sdk v3 with `X-Line-Retry-Key`
  and retries only on 5xx or timeout.
* `lineapi.sandbox`: `create_sandbox_app`, a Flask stand-in for LINE with an HTML login page,
  LINE's error shapes, an add-friend offer, push recording and fault injection.
* `lineapi.testing`: `running_sandbox` (the sandbox on a loopback port in a thread),
  `login_as` (fills in the login page like a script), `FakeClock`.
* `lineapi.cli`: `skillspot line-sandbox`.

See docs/line.md.
"""
