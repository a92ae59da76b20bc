"""The Gemini edge: the google-genai client, its errors, prices, API settings and quota."""
