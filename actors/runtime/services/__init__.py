"""Services several kinds of actor offer: joining, blob serving."""
