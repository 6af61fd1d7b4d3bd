"""The read side: views built from the events, and the renderings made from them."""
