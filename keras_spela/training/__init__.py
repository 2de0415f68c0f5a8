"""SpelaModel and the parts that make it train, evaluate and predict
like a Keras model."""
