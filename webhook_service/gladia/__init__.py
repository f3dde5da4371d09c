"""Client side of Gladia's live v2 protocol: REST client, session configuration, WebSocket stream."""
