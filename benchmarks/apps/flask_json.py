"""The suite's Flask workload: one JSON route, as a small real application has.

GET /json answers {"message": "Hello, world!"} through Flask's routing and
jsonify (its twin in PHP is json.php). The memory benchmark (pools.py) also
uses it: importing Flask is what a real application's workers carry.
"""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/json")
def hello_json():
    return jsonify(message="Hello, world!")


application = app
