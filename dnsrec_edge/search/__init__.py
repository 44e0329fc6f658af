"""DNS-Rec search: space, controllers, budgets, resource constraint, search loop, retraining."""
