"""Transport security building blocks: TLS credentials (tls.py) and certificate
generation (certs.py). Used by the listeners, the peer transport and the
clients; nothing here binds a socket."""
