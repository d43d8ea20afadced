"""Models-from-code entry point of the recsys pyfunc: MLflow runs this file to get the model object,
so the logged model holds code and safetensors/Parquet artifacts, never a pickle. Not imported by
the package itself (importing it registers the model with MLflow as a side effect)."""

import mlflow

from recsys.tracking.pyfunc import TopKRecommender

mlflow.models.set_model(TopKRecommender())
