"""HTTP serving: the OpenAI-compatible routing gateway and the replay upstream used to test it."""
