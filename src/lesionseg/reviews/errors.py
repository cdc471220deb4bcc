"""What can go wrong with a case, each with the HTTP status it answers and the reason the client sees
(as `imaging.decode.ImageRejected` does for images). No database imports: the service's error handlers
load this whether or not the worklist is on."""


class CaseError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class CaseNotFound(CaseError):
    def __init__(self, case_id: str) -> None:
        super().__init__(404, f"there is no case {case_id}")


class StaleReview(CaseError):
    """The review changed since the version the client saw."""

    def __init__(self, given_version: int, current_version: int) -> None:
        super().__init__(
            409,
            f"the review changed since version {given_version} (it is at version {current_version}): "
            "read the case again and decide on the latest",
        )
        self.current_version = current_version


class UnconfirmedOutOfDistribution(CaseError):
    """A verdict that would put a picture the gate called "not dermoscopy" into the training set, unconfirmed."""

    def __init__(self, status: str) -> None:
        super().__init__(
            409,
            f"this case was flagged as probably not dermoscopy; to mark it {status}, and so let it into an export "
            'for training, confirm that it is dermoscopy: send "confirm_out_of_distribution": true',
        )


class InvalidMask(CaseError):
    def __init__(self, message: str) -> None:
        super().__init__(422, message)


class InvalidCursor(CaseError):
    def __init__(self) -> None:
        super().__init__(422, "the cursor is not one this service gave out")


class ImageMissing(CaseError):
    """The case is there but its image file is not: removed from the storage folder by hand, or lost."""

    def __init__(self, case_id: str) -> None:
        super().__init__(404, f"the image of case {case_id} is missing from the storage folder")


class StorageFull(CaseError):
    """No room to keep another image: the disk is full, or fuller than LESIONSEG_STORAGE_MIN_FREE_MB allows."""

    def __init__(self) -> None:
        super().__init__(507, "the server has no room to keep this image; an administrator must free space first")
