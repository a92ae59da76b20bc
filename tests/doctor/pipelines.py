"""A pipeline whose model the API does not serve (the review example otherwise)."""

from dataclasses import replace

from flows.examples.reviews import pipeline as reviews

unknown_model = replace(reviews, name="doctor-unknown-model", model="no-such-model")
