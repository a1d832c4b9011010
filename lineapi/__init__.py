"""LINE Login v2.1 and Messaging API: the client the portal uses and a faithful local sandbox."""
