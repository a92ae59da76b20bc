"""The three channels (batch, background, direct) behind one protocol, and their IO."""
