pub struct SimStorage;
