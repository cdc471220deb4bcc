"""The review worklist: cases (an image, the model's mask and how far to trust it) waiting for a person,
their reviews, and the corrections that go back into training.

Opt-in: the service stays stateless unless LESIONSEG_DATABASE_URL is set. `database` holds the tables
and their migrations, `storage` the images (content-addressed files), `cases` the operations the HTTP
routes and `lesionseg export-reviews` use.
"""
