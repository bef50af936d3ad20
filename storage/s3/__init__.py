"""S3-compatible object storage for report bytes: the request signature (`sigv4.py`), the
client (`client.py`), and where each store keeps report bytes when it is in use."""
