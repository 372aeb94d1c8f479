"""The Flask front end: the JSON API, the web pages and the metrics endpoint."""
