"""testapps.app wrapped in wsgiref.validate.validator, which checks every
PEP 3333 rule on both sides (environ, start_response, the iterable, close()).

A violation raises AssertionError (a 500 and a traceback in pfm's log) and a
WSGIWarning is turned into an error here, so neither can pass unnoticed.
"""

import warnings
from wsgiref.validate import WSGIWarning, validator

import testapps

warnings.simplefilter("error", WSGIWarning)

app = validator(testapps.app)
