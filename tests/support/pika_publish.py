"""Publishes one message with python3-pika (an AMQP client independent of Herald's) and waits
for the broker's publisher confirm. Usage: pika_publish.py URL EXCHANGE ROUTING_KEY BODY_FILE"""
import sys

import pika

url, exchange, key, body_file = sys.argv[1:5]
with open(body_file, "rb") as f:
    body = f.read()
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
ch.confirm_delivery()
ch.basic_publish(exchange=exchange, routing_key=key, body=body,
                 properties=pika.BasicProperties(content_type="application/cloudevents+json",
                                                 delivery_mode=2, headers={"x-sender": "pika"}),
                 mandatory=True)
conn.close()
print("published", len(body), "bytes")
