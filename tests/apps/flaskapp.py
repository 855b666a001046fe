"""A Flask site for the end-to-end tests: several routes, a path parameter,
query arguments, a POST form, JSON in and out, and url_for() redirects.

It must work behind nginx with nothing but `include fastcgi_params;` and
`fastcgi_pass`: that needs SCRIPT_NAME/PATH_INFO derived right by pfm.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, redirect, request, url_for

app = Flask(__name__)


@app.route("/")
def index():
    return "Flask index, served by %d\n" % os.getpid()


@app.route("/users/<int:uid>")
def user(uid):
    return jsonify(uid=uid, url=url_for("user", uid=uid), path=request.path,
                   script_root=request.script_root)


@app.route("/hello/<name>")
def hello(name):
    return jsonify(name=name)


@app.route("/files/<path:sub>")
def files(sub):
    return jsonify(sub=sub)


@app.route("/search")
def search():
    return jsonify(q=request.args.get("q"), tags=request.args.getlist("tag"),
                   page=request.args.get("page", 1, type=int))


@app.route("/form", methods=["GET", "POST"])
def form():
    if request.method == "POST":
        return jsonify(name=request.form.get("name"), age=request.form.get("age", type=int),
                       method=request.method)
    return '<form method="post"><input name="name"><input name="age"></form>'


@app.route("/api/sum", methods=["POST"])
def api_sum():
    data = request.get_json(force=False)
    return jsonify(total=sum(data["numbers"]), count=len(data["numbers"]))


@app.route("/go")
def go():
    return redirect(url_for("user", uid=7))


@app.route("/go-external")
def go_external():
    return redirect(url_for("search", q="x", _external=True))


@app.errorhandler(404)
def not_found(e):
    return jsonify(error="not found", path=request.path), 404
