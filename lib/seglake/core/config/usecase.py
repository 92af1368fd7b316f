"""The whole use case's config: one source, and each stage's settings with their defaults."""

from __future__ import annotations

from pydantic import Field, model_validator

from seglake.core.config.base import CatalogConfig, SparkSettings, Strict
from seglake.core.config.sources import (
    ClassifierConfig,
    EntitiesSource,
    EventsSource,
    RatingsSource,
    TextsSource,
)
from seglake.core.config.stages import (
    DensityConfig,
    DriftConfig,
    ExplainConfig,
    FeaturesConfig,
    FilterConfig,
    SweepConfig,
    TextClustersConfig,
    TrackingConfig,
    TransformConfig,
)


class SeglakeConfig(Strict):
    """A whole use case: where tables live, what the source is, and each stage's settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
    lakehouse: str
    spark: SparkSettings = Field(default_factory=SparkSettings)
    events: EventsSource | None = None
    entities: EntitiesSource | None = None
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    transform: TransformConfig = Field(default_factory=TransformConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    density: DensityConfig = Field(default_factory=DensityConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    classifier: ClassifierConfig | None = None
    ratings: RatingsSource | None = None
    texts: TextsSource | None = None
    text_clusters: TextClustersConfig = Field(default_factory=TextClustersConfig)
    catalog: CatalogConfig | None = None
    source_file: str = Field("", exclude=True)
    config_hash: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _one_source(self) -> "SeglakeConfig":
        sources = [self.events, self.entities, self.ratings, self.texts]
        if sum(source is not None for source in sources) != 1:
            raise ValueError("give exactly one source: 'events' (raw logs), 'entities' (a table), "
                             "'ratings' (ratings + users + items files) or 'texts' (short texts)")
        return self
